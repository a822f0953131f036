"""The tests' re-ID folders: written by :mod:`mgkd.data.toy_reid` (also behind ``mgkd toy-data``)."""
from mgkd.data.toy_reid import (DISTRACTORS, JUNK_PER_FOLDER, OFFICIAL_FOLDER,  # noqa: F401
                                duke_name, market_name, msmt_name, write_market1501, write_msmt17)
