"""Planners behind one protocol (plan.py), the Maze2D, value-guided and BC planners, episode loops and reports."""
