"""Chat: turning a conversation into a prompt."""
