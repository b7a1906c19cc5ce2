"""Generation: prompts to summaries, batched and resumable; the generations file the score stage reads."""
