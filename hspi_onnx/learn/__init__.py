"""Features, output forms, classifier, svm-bits baseline, evaluation, plots."""
