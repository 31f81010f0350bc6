"""The systematic study: a grid of recipe settings x tasks, run as resumable cells, and its report."""
