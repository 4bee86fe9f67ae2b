"""Each paper's end-to-end demo: `ulim`, `umi`, `ifa` (`refimpl demo <paper>`)."""
