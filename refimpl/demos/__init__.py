"""Per-paper demos (`refimpl demo [ulim|umi|ifa]`), each with `main(argv) -> int`."""
