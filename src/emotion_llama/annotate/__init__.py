"""The MERR-style dataset builder: clues, descriptions, reasoning, filtering and exports."""
