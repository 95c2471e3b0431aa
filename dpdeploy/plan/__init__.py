"""The plan: the matrix, settings, and the pure rules that resolve (facts, matrix, settings) into a plan."""
