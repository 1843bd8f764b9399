"""Circuits: gates (matrices), ansaetze (which gates, where the angles live), the
statevector simulator, measurements, and the :class:`QNN` module that ties them.

``ANSATZE`` maps each name to its :class:`Ansatz`; :func:`get_ansatz` resolves a name
and :func:`register_ansatz` adds your own.
"""

from __future__ import annotations

from .ansatze import RYCNOTChain, RYCNOTRing, RYRZCZ, Ansatz, Op, U3CU3Ring

ANSATZE: dict[str, Ansatz] = {a.name: a for a in (U3CU3Ring(), RYCNOTRing(), RYCNOTChain(), RYRZCZ())}
"""Registered ansaetze by name. The first four are the papers'."""


def get_ansatz(ansatz: str | Ansatz) -> Ansatz:
    """Resolve a registered name (or pass an :class:`Ansatz` through).

    Raises:
        ValueError: the name is not registered; the message lists the valid ones.
    """
    if isinstance(ansatz, Ansatz):
        return ansatz
    if isinstance(ansatz, str) and ansatz in ANSATZE:
        return ANSATZE[ansatz]
    raise ValueError(f"Invalid `ansatz` {ansatz!r}. Must be one of {sorted(ANSATZE)} (or register your own).")


def register_ansatz(ansatz: Ansatz, *, overwrite: bool = False) -> Ansatz:
    """Make ``ansatz`` available by its ``name`` (``QTConfig(ansatz=name)``).

    Raises:
        ValueError: the name is empty, or already taken and ``overwrite`` is False.
    """
    if not isinstance(ansatz, Ansatz):
        raise TypeError(f"`ansatz` must be an Ansatz instance, got {type(ansatz).__name__}")
    if not ansatz.name:
        raise ValueError("an ansatz needs a non-empty `name`")
    if ansatz.name in ANSATZE and not overwrite and ANSATZE[ansatz.name] is not ansatz:
        raise ValueError(f"ansatz {ansatz.name!r} is already registered; pass overwrite=True to replace it")
    ANSATZE[ansatz.name] = ansatz
    return ansatz


from .qnn import QNN  # noqa: E402  (needs get_ansatz)

__all__ = ["ANSATZE", "Ansatz", "Op", "QNN", "get_ansatz", "register_ansatz"]
