"""The `storyforge` command, above both the origin and the workers."""
