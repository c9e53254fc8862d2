"""The one exception arraypool raises, with the stable codes of the Node
package (``ArrayPoolError.code``: ``'ERR_STALE_HANDLE'``, ...); the native
codes come from the Rust core unchanged."""


class ArrayPoolError(Exception):
    """An arraypool failure; ``code`` says which (see README, "Errors")."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    def __reduce__(self):
        # Raised in a worker, re-raised in the parent (multiprocessing pickles it).
        return (ArrayPoolError, (self.code, str(self)))
