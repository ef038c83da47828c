// Package neonet provides NEO links: TCP connections (optionally TLS)
// between NEO nodes that carry the packets of neo/proto, wire-compatible
// with NEO/py.
//
// # Parts
//
//   - Setting up: [Dial] (or a [Dialer], which throttles reconnections per
//     address as NEO/py does) and [Listen] / [Listener.Accept] return a
//     [Link] once both sides exchanged the NEO handshake. A peer speaking
//     another protocol version ([proto.VersionError]) or not NEO at all
//     ([proto.ErrNotNEO]) is refused, closing the connection without
//     sending anything else, as NEO/py does.
//   - TLS: [TLSConfig] / [LoadTLSConfig] build the configuration NEO/py
//     uses (TLS 1.2+, certificates required on both sides, chain checked
//     against the cluster's CA file, no host name check, optional CRLs). A
//     listener with TLS looks at the first byte of each connection and
//     refuses non-TLS peers ([ErrNotTLS]).
//   - Requests: [Link.Ask] sends a request and waits for its answer,
//     matched by message id; any number may be in flight on one link.
//     [Link.Start] returns a [Call] instead, to wait later, to learn the
//     request's id, or to give the answer's memory back with
//     [Call.Release]. An Error packet received as the answer is returned as
//     an error wrapping the *[proto.Error].
//   - Notifications: [Link.Notify]; [Link.Send] sends a packet with a
//     chosen message id (replication data, relayed answers);
//     [Link.SendBuffered] holds it until 64 KiB are buffered or another
//     packet is sent, as NEO/py does for AddTransaction and AddObject.
//   - Receiving: [Link.Recv] returns the peer's requests and notifications
//     in order, each as a [Request] that can be answered at any time, from
//     any goroutine, with [Request.Reply] (or [Request.Abort]: answer, then
//     close), and released with [Request.Release]. Recv answers Ping
//     itself.
//   - Barrier: [Link.Sync] pings the peer and waits until everything the
//     peer sent before its Pong was handled; [Link.AskSynced] does the same
//     with the answer to a request, without the Ping's round trip.
//   - Closing: [Link.Close], or the peer, or bad input takes a link down;
//     [Link.Done] and [Link.Err] tell when and why. Errors of a link that
//     is down wrap [ErrLinkDown] and the cause ([ErrClosed],
//     [ErrPeerClosed], a *[MalformedError], a *[ProtocolError], a socket
//     error).
//
// # Rules kept from NEO/py
//
// Both sides send the 6-byte handshake at once, without waiting for the
// peer's. Every packet we originate (request or notification) takes the
// next message id of the link; answers carry the id of their request.
// Input that is not a stream of NEO packets (bad msgpack, unknown packet
// code, arguments not matching the packet type, a packet larger than
// [MaxPacketSize]) closes the link without sending anything. An answer to no
// pending request, or of a type that does not answer the request, is a
// protocol error: the link sends Error(PROTOCOL_ERROR) and closes. An Error
// with an unknown id is given to Recv. Sockets get TCP_NODELAY and
// NEO/py's keep-alive settings (60 s idle, 3 probes 10 s apart); there is
// no applicative keep-alive and no idle timeout on links.
//
// # Memory, goroutines and contexts
//
// The connection is read by one goroutine at a time, the one holding the
// link's read turn: a goroutine waiting for an answer (Ask, Call.Wait,
// Sync) or in Recv takes the turn when it is free, reads and dispatches
// until what it waits for came, then gives the turn back. So an answer is
// usually read by the goroutine waiting for it, with no hand-over from
// another goroutine (on loopback, such a hand-over costs as much as the
// system calls of a round trip); answers and requests read by one waiter
// for others are handed to them. A loop calling Recv and answering each
// request before calling Recv again reads the next request only then;
// handling requests in goroutines of their own overlaps the two. Each link
// also has one goroutine of its own, which Close waits for: it reads while
// nobody waits (taking the turn once it has been free for a millisecond,
// and giving it back when a waiter comes), so that requests are queued and
// the peer closing is noticed even then, and it ends the link. While the
// link is in use, that goroutine looks at the turn less and less often (up
// to every 100 ms), so that a busy link does not wake it every
// millisecond. A Listener has one accepting goroutine and one per
// connection in its handshake, which Listener.Close waits for.
// Every call that may block takes a context; a waiter reading for itself
// stops when its context ends (a context that can be canceled is watched
// with context.AfterFunc while reading: two small allocations). A write
// already started is only interrupted by the link going down, since
// stopping it midway would cut a packet.
//
// The link reads into one buffer, grown only as much as the peer actually
// sends (up to MaxPacketSize for one packet). A message that may hold byte
// strings (object data, user, description, ...) is decoded in place, in
// memory of its own: a small packet is copied there out of the read
// buffer; a big one (from 8 KiB: object data, typically) is read there,
// past its first bytes, saving a copy. That memory is never more than
// twice what the peer sent of the packet plus 256 KiB, and the byte strings
// of a message have no spare capacity (an append to one allocates). Other
// messages are decoded from the read buffer. Received requests and
// notifications wait for Recv in a queue bounded in bytes (passed by one
// packet at most); when it is full nobody reads, so a fast peer is held
// back by TCP flow control. Answers are read like anything else, so a link
// whose owner does not call Recv stops delivering answers once the queue
// is full: the owner of a link must keep calling Recv (usually in a loop
// of its own) or close it.
//
// # Releasing received messages
//
// A received message stays valid, byte strings included, for as long as
// it is referenced: by default its memory goes to the garbage collector.
// [Request.Release] and [Call.Release] give it back to the link instead,
// for later packets to be decoded in; a load that copies the object data
// out and releases the answer then allocates nothing, on either side of
// the link. The rule: after Release, neither the Request or Call nor the
// message (nor any byte string, slice or value reachable from it) may be
// used, by any goroutine; copy out first what must outlive it. Nothing
// else releases a message: Reply, Send or Ask with a message that points
// into a received one copy what they need before returning, and the link
// never reuses the memory of a message that was not released. Release at
// most once. Released memory waits in pools that the garbage collector
// empties. Tests of this package fill released memory with garbage at
// once, so that a message used after its release shows it.
//
// # Cost
//
// A request costs one write system call (and a share of the reads). A
// round trip whose answer (and request, on the other side) is released
// allocates nothing (with contexts that cannot be canceled; see above);
// with Ask, the answer is allocated. BenchmarkRoundTripRatio compares a
// round trip (AskObject, AnswerObject released) on a loopback link with a
// plain TCP ping-pong of the same bytes (one buffer reused, no framing,
// no goroutines) in the same run, for 64 B, 4 KiB and 64 KiB of object
// data; the link takes at most twice as long (1.3 to 1.8 times on a
// loaded 2-core machine, 1.6 to 1.8 for 64 KiB, which the peer's encoding
// copies once more):
//
//	go test -run XXX -bench RoundTripRatio -count 3 -benchtime 50000x ./neo/neonet
package neonet
