"""Models as versioned things: the registry of each rule's model versions, and their lifecycle."""
