"""The one exception family for errors a user can act on.

The CLI prints ``error: <message>`` on one line and exits 2 for any of these;
``hspi --debug`` shows the traceback instead.
"""


class HspiError(Exception):
    """Base of every user-facing error."""


class UnknownPlatformError(HspiError):
    """A platform label or glob that names nothing known."""


class BadLabelError(HspiError):
    """A platform label that does not follow the grammar."""


class BadModelError(HspiError):
    """A missing, corrupt, unsafe or unsupported ONNX model."""


class BadProbesError(HspiError):
    """A missing, corrupt or mismatched probe-set file."""


class UnsupportedError(HspiError):
    """A runtime cannot do what was asked (missing op, precision, library)."""


class BadManifestError(HspiError):
    """A reference DB manifest that is unreadable, of a schema this version cannot read, or malformed."""
