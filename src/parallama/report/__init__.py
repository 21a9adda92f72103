"""How a run is shown: a live table on a terminal, plain progress lines otherwise, and the final output."""
