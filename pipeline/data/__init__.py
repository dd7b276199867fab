"""Datasets: download, split construction, and the loading that training and evaluation share."""
