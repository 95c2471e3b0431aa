"""Terminal rendering: text views of results and progress bars."""
