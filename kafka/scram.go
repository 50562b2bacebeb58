package kafka

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// scramClient is a SCRAM (RFC 5802) client for sarama, without channel
// binding, so no third-party SCRAM module is needed.
type scramClient struct {
	h           func() hash.Hash
	user, pass  string
	nonce       string
	clientFirst string
	serverSig   []byte
	step        int
	done        bool
}

func newSCRAM(h func() hash.Hash) *scramClient { return &scramClient{h: h} }

func (c *scramClient) Begin(user, pass, authzID string) error {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("making scram nonce: %w", err)
	}
	c.user, c.pass, c.step, c.done = user, pass, 0, false
	c.nonce = base64.RawStdEncoding.EncodeToString(b[:])
	return nil
}

func scramName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

func (c *scramClient) Step(challenge string) (string, error) {
	switch c.step {
	case 0:
		c.step++
		c.clientFirst = "n=" + scramName(c.user) + ",r=" + c.nonce
		return "n,," + c.clientFirst, nil
	case 1:
		c.step++
		attrs := map[byte]string{}
		for _, f := range strings.Split(challenge, ",") {
			if len(f) >= 2 && f[1] == '=' {
				attrs[f[0]] = f[2:]
			}
		}
		nonce, saltB64, iterS := attrs['r'], attrs['s'], attrs['i']
		if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
			return "", errors.New("scram: server nonce does not extend ours")
		}
		salt, err := base64.StdEncoding.DecodeString(saltB64)
		if err != nil {
			return "", fmt.Errorf("scram: bad salt: %w", err)
		}
		iter, err := strconv.Atoi(iterS)
		if err != nil || iter < 1 || iter > 1<<22 {
			return "", fmt.Errorf("scram: bad iteration count %q", iterS)
		}
		salted, err := pbkdf2.Key(c.h, c.pass, salt, iter, c.h().Size())
		if err != nil {
			return "", fmt.Errorf("scram: %w", err)
		}
		clientKey := c.hmac(salted, "Client Key")
		sum := c.h()
		sum.Write(clientKey)
		storedKey := sum.Sum(nil)
		final := "c=biws,r=" + nonce
		authMsg := c.clientFirst + "," + challenge + "," + final
		sig := c.hmac(storedKey, authMsg)
		proof := make([]byte, len(clientKey))
		for i := range clientKey {
			proof[i] = clientKey[i] ^ sig[i]
		}
		c.serverSig = c.hmac(c.hmac(salted, "Server Key"), authMsg)
		return final + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
	default:
		c.done = true
		if e, ok := strings.CutPrefix(challenge, "e="); ok {
			return "", fmt.Errorf("scram: server error %q", e)
		}
		v, ok := strings.CutPrefix(challenge, "v=")
		got, err := base64.StdEncoding.DecodeString(v)
		if !ok || err != nil || !hmac.Equal(got, c.serverSig) {
			return "", errors.New("scram: server signature mismatch")
		}
		return "", nil
	}
}

func (c *scramClient) hmac(key []byte, msg string) []byte {
	m := hmac.New(c.h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func (c *scramClient) Done() bool { return c.done }
