"""The numbers the public reads aloud or types: an application's 申请编号 (``SQ…``) and a
complaint's 投诉编号 (``TS…``).

Random (``secrets``), from 31 symbols with none that read alike (no 0 O 1 I L), so a
number spoken on the phone or copied from a receipt cannot be mistaken for another.
"""

from __future__ import annotations

import secrets

NUMBER_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # 31 symbols, no 0 O 1 I L


def new_number(prefix: str, length: int) -> str:
    """``prefix`` + ``length`` random symbols of :data:`NUMBER_ALPHABET`."""
    return prefix + "".join(secrets.choice(NUMBER_ALPHABET) for _ in range(length))
