"""Whole folders written atomically: build in a temporary sibling, rename when complete."""

import os
import shutil
import tempfile


class staging_folder:
    """Context manager: a temporary sibling of `directory`, renamed onto it on success."""

    def __init__(self, directory, overwrite=True):
        self.directory, self.overwrite = directory, overwrite
        self.created = []  # parent folders made here, removed on failure

    def __enter__(self):
        parent = os.path.dirname(self.directory)
        missing = parent
        while missing and not os.path.exists(missing):
            self.created.append(missing)
            missing = os.path.dirname(missing)
        os.makedirs(parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(self.directory)}.tmp-")
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                if os.path.isdir(self.directory) and self.overwrite:
                    shutil.rmtree(self.directory)
                os.replace(self.tmp, self.directory)
                return False
            except BaseException:
                self._clean()
                raise
        self._clean()
        return False

    def _clean(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        for folder in self.created:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                break
