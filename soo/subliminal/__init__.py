"""Subliminal learning (Cloud et al. 2025, arXiv 2507.14805): a student picks up a teacher's trait
from data that does not show it. Imports soo.core, soo.data, soo.train and soo.eval.

  digits      the mechanism's positive control: an MLP student matching only a teacher's auxiliary
              logits on noise learns the teacher's digits (scikit-learn's 8x8 digits), same vs
              different initialisation, over seeds

CLI: subliminal.py.
"""
