"""``python -m adapters.web`` (or ``bidi-web``): serve conversations to browsers. ``--help`` lists the options."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from adapters.web.settings import SettingsError, parse_settings


def main(argv: Sequence[str] | None = None) -> int:
    from adapters.web.server import serve

    try:
        settings = parse_settings(argv)
        settings.check(os.environ)
    except SettingsError as exc:
        print(f"bidi-core web: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
