"""``lever reproduce``: the paper's tables per backbone in one resumable command.

``config`` reads the shipped dataset configs (``configs/*.json``) and recognises a dataset folder by
its metadata; ``params`` holds the command's settings; ``cells`` runs the stages (teacher, soft
labels, features) and the cells (one backbone without or with LEVER) through the one trainer;
``report`` writes the table, its JSON and the plots. See docs/reproduce.md.
"""
