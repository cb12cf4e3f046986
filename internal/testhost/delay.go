package testhost

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// This kernel has no sch_netem, so Delay does what netem's delay would:
// the host's traffic goes through NFQUEUE, and a netlink listener here
// holds each packet for the delay before it accepts it.

// nfnetlink_queue, from linux/netfilter/nfnetlink_queue.h.
const (
	nfnlSubsysQueue  = 3
	nfqnlMsgPacket   = 0
	nfqnlMsgVerdict  = 1
	nfqnlMsgConfig   = 2
	nfqaPacketHdr    = 1
	nfqaVerdictHdr   = 2
	nfqaCfgCmd       = 1
	nfqaCfgParams    = 2
	nfqaCfgQueueMax  = 3
	nfqnlCfgCmdBind  = 1
	nfqnlCopyMeta    = 1
	nfDrop           = 0
	nfAccept         = 1
	nlmsgHdrLen      = 16
	nfgenHdrLen      = 4
	nlaHdrLen        = 4
	delayQueueMaxLen = 1 << 16
)

var queueNums struct {
	sync.Mutex
	next uint16
}

// Delayer holds a host's packets; Set changes the delay.
type Delayer struct{ q *delayQueue }

// Set makes the delay d from the next packet on.
func (d *Delayer) Set(delay time.Duration) { d.q.delay.Store(int64(delay)) }

// SetLoss drops each packet with probability p (0 to 1) from the next
// packet on, as a lossy link would.
func (d *Delayer) SetLoss(p float64) { d.q.loss.Store(int64(p * (1 << 32))) }

// Delay holds every packet the host sends or receives for d before it
// lets it through (so a round trip takes 2d longer), until the test ends.
// It needs iptables-nft.
func (h *Host) Delay(t testing.TB, d time.Duration) *Delayer {
	t.Helper()
	queueNums.Lock()
	queueNums.next++
	num := 4000 + queueNums.next // each host has its own netns, so any number works; distinct ones read better in logs
	queueNums.Unlock()

	var fd int
	err := inNetNS(h.NS, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		t.Fatalf("delay: netlink socket: %v", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	// The loop looks up now and then to see whether it should stop: only
	// it closes the socket, so its number is never read after reuse.
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		t.Fatalf("delay: bind: %v", err)
	}
	q := &delayQueue{fd: fd, num: num, done: make(chan struct{})}
	q.delay.Store(int64(d))
	for _, attrs := range [][]byte{
		nla(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0}),
		nla(nfqaCfgParams, []byte{0, 0, 0, 0, nfqnlCopyMeta}),
		nla(nfqaCfgQueueMax, binary.BigEndian.AppendUint32(nil, delayQueueMaxLen)),
	} {
		if err := q.send(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs); err != nil {
			unix.Close(fd)
			t.Fatalf("delay: configuring queue %d: %v", num, err)
		}
		if err := q.ack(); err != nil {
			unix.Close(fd)
			t.Fatalf("delay: configuring queue %d: %v", num, err)
		}
	}
	go q.loop()
	// Closed before the rules go: with --queue-bypass, packets pass
	// undelayed once nobody listens.
	h.onClose(q.close)

	n := strconv.Itoa(int(num))
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		if err := cmdRun("ip", "netns", "exec", h.NS, "iptables-nft", "-t", "mangle", "-I", chain,
			"-j", "NFQUEUE", "--queue-num", n, "--queue-bypass"); err != nil {
			t.Fatalf("delay: %v (apt-get install iptables)", err)
		}
		if err := cmdRun("ip", "netns", "exec", h.NS, "ip6tables-nft", "-t", "mangle", "-I", chain,
			"-j", "NFQUEUE", "--queue-num", n, "--queue-bypass"); err != nil {
			t.Fatalf("delay: %v", err)
		}
	}
	t.Cleanup(func() {
		for _, tool := range []string{"iptables-nft", "ip6tables-nft"} {
			for _, chain := range []string{"INPUT", "OUTPUT"} {
				cmdRun("ip", "netns", "exec", h.NS, tool, "-t", "mangle", "-D", chain,
					"-j", "NFQUEUE", "--queue-num", n, "--queue-bypass")
			}
		}
		q.close()
	})
	return &Delayer{q}
}

type delayQueue struct {
	fd    int
	num   uint16
	delay atomic.Int64
	loss  atomic.Int64 // probability × 2^32
	seq   uint32
	mu    sync.Mutex // guards seq and writes
	once  sync.Once
	done  chan struct{}
}

func (q *delayQueue) close() {
	q.once.Do(func() { close(q.done) })
}

func (q *delayQueue) stopped() bool {
	select {
	case <-q.done:
		return true
	default:
		return false
	}
}

// nla is one netlink attribute, padded to 4 bytes.
func nla(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(nlaHdrLen+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (q *delayQueue) send(msg uint16, flags uint16, attrs []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fd < 0 {
		return errors.New("closed")
	}
	q.seq++
	b := binary.NativeEndian.AppendUint32(nil, uint32(nlmsgHdrLen+nfgenHdrLen+len(attrs)))
	b = binary.NativeEndian.AppendUint16(b, nfnlSubsysQueue<<8|msg)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, q.seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, unix.AF_UNSPEC, 0) // family, NFNETLINK_V0
	b = binary.BigEndian.AppendUint16(b, q.num)
	b = append(b, attrs...)
	return unix.Sendto(q.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// ack reads the kernel's answer to a request sent with NLM_F_ACK.
func (q *delayQueue) ack() error {
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(q.fd, buf, 0)
	if err != nil {
		return err
	}
	if n < nlmsgHdrLen+4 || binary.NativeEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return errors.New("no netlink ack")
	}
	if code := int32(binary.NativeEndian.Uint32(buf[nlmsgHdrLen:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// loop reads queued packets and accepts each after the delay.
func (q *delayQueue) loop() {
	buf := make([]byte, 1<<16)
	defer func() {
		q.mu.Lock()
		unix.Close(q.fd)
		q.fd = -1
		q.mu.Unlock()
	}()
	for {
		n, _, err := unix.Recvfrom(q.fd, buf, 0)
		if q.stopped() {
			return
		}
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // the socket overflowed: those packets are lost, as on a lossy link
		}
		if err != nil {
			return
		}
		for msg := buf[:n]; len(msg) >= nlmsgHdrLen; {
			l := int(binary.NativeEndian.Uint32(msg))
			if l < nlmsgHdrLen || l > len(msg) {
				break
			}
			if binary.NativeEndian.Uint16(msg[4:]) == nfnlSubsysQueue<<8|nfqnlMsgPacket {
				if id, ok := packetID(msg[nlmsgHdrLen+nfgenHdrLen : l]); ok {
					verdict := uint32(nfAccept)
					if int64(rand.Uint32()) < q.loss.Load() {
						verdict = nfDrop
					}
					time.AfterFunc(time.Duration(q.delay.Load()), func() { q.verdict(id, verdict) })
				}
			}
			msg = msg[(l+3)&^3:]
		}
	}
}

func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= nlaHdrLen {
		l := int(binary.NativeEndian.Uint16(attrs))
		typ := binary.NativeEndian.Uint16(attrs[2:]) & 0x3fff
		if l < nlaHdrLen || l > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= nlaHdrLen+4 {
			return binary.BigEndian.Uint32(attrs[nlaHdrLen:]), true
		}
		attrs = attrs[(l+3)&^3:]
	}
	return 0, false
}

func (q *delayQueue) verdict(id, verdict uint32) {
	if q.stopped() {
		return
	}
	v := binary.BigEndian.AppendUint32(nil, verdict)
	v = binary.BigEndian.AppendUint32(v, id)
	if err := q.send(nfqnlMsgVerdict, unix.NLM_F_REQUEST, nla(nfqaVerdictHdr, v)); err != nil && !q.stopped() {
		fmt.Println("testhost: delay: verdict:", err)
	}
}
