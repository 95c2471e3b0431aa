"""The state root's guard: one changing command at a time, and what a killed run left behind."""
