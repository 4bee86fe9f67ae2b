"""Each paper's training and evaluation pipeline: `ulim`, `umi`, `ifa`."""
