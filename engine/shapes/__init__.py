"""Client shapes: how an operation's answer is rendered for its clients.

A wire codec raises every upstream answer to the canonical Chat Completions shape (or, for a native
passthrough, leaves it in the client's own shape). A renderer then writes what the client expects:
`chat` frames `chat.completion.chunk`s with `[DONE]`; `responses` builds Responses objects and named
events. Converting a client's request into the canonical shape lives here too.
"""
