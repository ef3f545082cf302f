"""The run-folder, config and report layer that ``tunekit train`` and the experiments of ``tunekit run``
share: `RunFolder` (whose folder it is, one process at a time, nothing deleted or written before the inputs
are checked), atomic files, markdown tables and plots."""

from .folder import RunFolder, RunFolderError

__all__ = ["RunFolder", "RunFolderError"]
