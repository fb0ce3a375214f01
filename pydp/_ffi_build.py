"""Generate the cffi (API, out-of-line) C source for pydp's core.

Run by meson: ``python _ffi_build.py csrc/pd_api.h OUT.c``. The cdef is the
public header itself, with preprocessor lines other than integer #defines
removed, so the C API is declared in exactly one place.
"""

from __future__ import annotations

import re
import sys

import cffi


def cdef_from_header(text: str) -> str:
    """Return `text` (a C header) reduced to what cffi's cdef accepts."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            if re.match(r"#define\s+\w+\s+\d+\s*$", s):
                out.append(s)
            continue
        out.append(line)
    return "\n".join(out)


def main(header: str, output: str) -> None:
    """Write the generated C source for module ``pydp._pydp_cffi``."""
    with open(header, encoding="utf-8") as f:
        cdef = cdef_from_header(f.read())
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.set_source("pydp._pydp_cffi", '#include "pd_api.h"')
    ffi.emit_c_code(output)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
