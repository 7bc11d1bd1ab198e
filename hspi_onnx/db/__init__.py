"""The reference DB: store, build, merge, digest index, reports, dataset readers."""
