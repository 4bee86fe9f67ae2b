"""The models (ULIM, UMI, IFA, PGIN and the baselines), composed from the components in refimpl.nn."""
