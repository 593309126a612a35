"""Datasets: Spoken-Shapes (generated offline) and loaders for the papers' published layouts.

Importing this package is cheap (no torch); the torch Dataset lives in `s2i_train.data.dataset`.
"""
