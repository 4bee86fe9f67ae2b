"""refimpl: the NumPy reference implementation of long-sequence multi-interest retrieval models.

Every component is a pair of pure functions, forward next to backward, in `refimpl.nn`; the models in
`refimpl.models` compose them; `refimpl.golden` reads and writes the frozen fixtures and
`refimpl.conformance` checks another implementation against them.
"""

__version__ = "0.1.0"
