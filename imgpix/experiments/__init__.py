"""Experiments on top of the library: the noisy-label study, the ablations, and their shared statistics and reports."""
