"""Video calls: a pure call state machine, WebRTC signalling over WebSockets, and the calls timeline.

Media flows peer to peer between the nurse's browser and the client's device; central only signals.
"""
