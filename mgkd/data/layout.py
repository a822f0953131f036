"""Where a re-ID data set lies under ``data_dir``: the folder itself, its parent, or a torchreid
data root.

A data set is found in the first candidate folder that holds every required entry; candidates are
relative to ``data_dir`` and tried in order (``""`` is ``data_dir`` itself). When none fits, the
error lists every folder tried and, for those that exist, what they lack.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mgkd.errors import DataError


@dataclass(frozen=True)
class FolderLayout:
    """How one data set may lie under ``data_dir``.

    ``candidates``: relative folders tried in order, each with a label for people (``"the folder
    itself"``, ``"torchreid's data root"``). ``required``: entries (folders or files) the data set's
    own folder holds. ``archive``: what to obtain and extract when nothing is found."""

    dataset: str
    candidates: tuple[tuple[str, str], ...]
    required: tuple[str, ...]
    archive: str

    def missing(self, folder: Path) -> list[str]:
        return [name for name in self.required if not (folder / name).exists()]

    def find(self, data_dir: Path) -> Path:
        """The data set's folder under ``data_dir``; DataError listing every layout tried."""
        tried = []
        for relative, label in self.candidates:
            folder = data_dir / relative if relative else data_dir
            if folder.is_dir():
                lacking = self.missing(folder)
                if not lacking:
                    return folder
                tried.append(f"{folder} ({label}; lacks {', '.join(lacking)})")
            else:
                tried.append(f"{folder} ({label}; absent)")
        raise DataError(
            f"Data set {self.dataset!r} not found under data_dir {data_dir}: its folder holds "
            f"{', '.join(self.required)}, and none of the layouts tried does: {'; '.join(tried)}. "
            f"mgkd cannot download it; obtain {self.archive} from its authors, extract it, and set "
            "data_dir to the extracted folder, its parent or a torchreid data root.")

    def expected_text(self, data_dir: Path) -> str:
        """The accepted layouts, for messages that are not about finding the folder."""
        return " or ".join(f"{data_dir / relative if relative else data_dir}/"
                           f"{{{','.join(self.required)}}}" for relative, _ in self.candidates)
