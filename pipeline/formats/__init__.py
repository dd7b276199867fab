"""The on-disk records that travel between stages: run folders, export folders, costs, each checked
field by field when read."""
