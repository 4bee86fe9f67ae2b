"""The components: each a forward and a hand-written backward, in one file per component."""
