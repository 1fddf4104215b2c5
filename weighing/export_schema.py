"""Write docs/wire-v1.schema.json from the wire models: ``python -m weighing.export_schema``."""

import json
import sys
from pathlib import Path

from weighing.wire import json_schema


def text() -> str:
    """The committed file's exact text: a test compares it byte for byte."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/wire-v1.schema.json")
    out.write_text(text(), encoding="utf-8")
    print(f"wrote {out}")
