"""What every layer shares and nothing else: one-line user errors, the command-line helpers, atomic
files and hashes, and the optional W&B run. It imports no other package of the project."""
