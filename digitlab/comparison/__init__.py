"""What the review and the search share: the versions they compare, git revisions, experiments or the
workspace (revisions), and reading several tests together (significance)."""
