"""Sound-source localization: similarity maps, their rendering, and their scores."""
