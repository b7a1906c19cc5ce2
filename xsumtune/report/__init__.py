"""Reading the results: the markdown report, figures, the human-evaluation sheet and seed spreads."""
