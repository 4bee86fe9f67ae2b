"""Each paper's models trained and evaluated on any interaction log (`refimpl.data.interactions`).

ULIM's in `ulim` (PGIN, its category predictor, in `pgin`), UMI's in `umi`, IFA's in `ifa`; what
they share: targets and model inputs from a log and a split (`inputs`) and the hit-rate evaluation
(`evaluation`). Every trainer trains by `refimpl.train.fit`.
"""
