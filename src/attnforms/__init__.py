"""attnforms: every attention formulation behind one API."""
