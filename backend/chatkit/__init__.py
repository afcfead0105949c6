"""The ChatKit protocol at /api/chatkit: a ChatKitServer over the same conversations and messages."""
