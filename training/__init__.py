"""Training (objectives, LS/Tchebycheff scalarisation, gradient aggregators, the accelerate trainer).

Empty until the training issue lands; the namespace exists so the package layout of DESIGN.md is installable.
"""
