"""Each paper's models trained and evaluated on any interaction log (`refimpl.data.interactions`).

The entry point is `registry`: `train(name, interactions, split, config)` and `evaluate(trained)` for
every retrieval model of ULIM's and UMI's papers by name (spec/pipelines.md). Behind it, ULIM's
pipeline in `ulim` (PGIN, its category predictor, in `pgin`) and UMI's in `umi`; IFA's in `ifa`;
what they share: targets and model inputs from a log and a split (`inputs`) and the hit-rate
evaluation (`evaluation`). Every trainer trains by `refimpl.train.fit`.
"""
