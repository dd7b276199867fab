"""The report stage: the paper's tables, paired differences, and figures."""
