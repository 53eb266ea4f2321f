/* The boot lab's network probe, static for L1 and L2 (busybox's nc has no
 * UDP and no clock):
 *
 *   netprobe serve-udp PORT     on 127.0.0.1: answers each datagram with
 *                               "echo:DATA"; "fwd?" with "fwd:" and the
 *                               contents of /tmp/hostfwd.txt; on port 53 a
 *                               DNS query with an A record 10.11.12.13
 *   netprobe ask IP PORT MSG    sends MSG by UDP, prints the answer
 *                               (3 tries, 2 s each); exit 1 without one
 *   netprobe sink PORT          TCP on every address: reads each
 *                               connection to its end, answers "got N\n"
 *   netprobe send IP PORT MIB   sends MIB MiB by TCP, waits for the sink's
 *                               answer, prints "bytes=N seconds=S"
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int die(const char *what)
{
	perror(what);
	return 2;
}

static struct sockaddr_in addr(const char *ip, int port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* A DNS answer to query q (n bytes): the question, one A record. */
static int dns_answer(const unsigned char *q, int n, unsigned char *out)
{
	int i = 12;
	if (n < 12)
		return -1;
	while (i < n && q[i])
		i += q[i] + 1;
	i += 5; /* the root label, type, class */
	if (i > n)
		return -1;
	memcpy(out, q, i);
	out[2] = 0x81;
	out[3] = 0x80;
	out[6] = 0;
	out[7] = 0;
	out[8] = out[9] = out[10] = out[11] = 0;
	int qtype = (q[i - 4] << 8) | q[i - 3];
	if (qtype != 1)
		return i; /* no records of other types */
	out[7] = 1;
	unsigned char rr[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 11, 12, 13};
	memcpy(out + i, rr, sizeof(rr));
	return i + sizeof(rr);
}

static int serve_udp(int port)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = addr("127.0.0.1", port);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("serve-udp");
	for (;;) {
		unsigned char in[1500], out[1600];
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		int n = recvfrom(s, in, sizeof(in) - 1, 0, (struct sockaddr *)&from, &fl);
		if (n < 0)
			continue;
		int m;
		if (port == 53) {
			m = dns_answer(in, n, out);
		} else if (n >= 4 && !memcmp(in, "fwd?", 4)) {
			char got[256] = "";
			FILE *f = fopen("/tmp/hostfwd.txt", "r");
			if (f) {
				if (!fgets(got, sizeof(got), f))
					got[0] = 0;
				fclose(f);
			}
			got[strcspn(got, "\r\n")] = 0;
			m = snprintf((char *)out, sizeof(out), "fwd:%s", got);
		} else {
			memcpy(out, "echo:", 5);
			memcpy(out + 5, in, n);
			m = n + 5;
		}
		if (m > 0)
			sendto(s, out, m, 0, (struct sockaddr *)&from, fl);
	}
}

static int ask(const char *ip, int port, const char *msg)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = addr(ip, port);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("ask");
	for (int i = 0; i < 3; i++) {
		char buf[1500];
		struct pollfd p = {s, POLLIN, 0};
		send(s, msg, strlen(msg), 0);
		if (poll(&p, 1, 2000) == 1) {
			int n = recv(s, buf, sizeof(buf) - 1, 0);
			if (n >= 0) {
				buf[n] = 0;
				printf("%s\n", buf);
				return 0;
			}
		}
	}
	return 1;
}

static int sink(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = addr("0.0.0.0", port);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4) < 0)
		return die("sink");
	for (;;) {
		int c = accept(s, NULL, NULL);
		static char buf[65536];
		long long total = 0;
		int n;
		if (c < 0)
			continue;
		while ((n = read(c, buf, sizeof(buf))) > 0)
			total += n;
		n = snprintf(buf, sizeof(buf), "got %lld\n", total);
		write(c, buf, n);
		close(c);
	}
}

static int send_mib(const char *ip, int port, int mib)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = addr(ip, port);
	static char buf[65536];
	long long total = (long long)mib << 20, sent = 0;
	double t0 = now();
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("send");
	memset(buf, 0x5a, sizeof(buf));
	while (sent < total) {
		int n = write(s, buf, sizeof(buf));
		if (n <= 0)
			return die("send: write");
		sent += n;
	}
	shutdown(s, SHUT_WR);
	char ans[64] = "";
	int n = read(s, ans, sizeof(ans) - 1);
	double t1 = now();
	if (n <= 0)
		return die("send: no answer");
	ans[n] = 0;
	printf("bytes=%lld seconds=%.3f sink=%s", atoll(ans + 4), t1 - t0, ans);
	return atoll(ans + 4) == total ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "serve-udp"))
		return serve_udp(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "ask"))
		return ask(argv[2], atoi(argv[3]), argv[4]);
	if (argc == 3 && !strcmp(argv[1], "sink"))
		return sink(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "send"))
		return send_mib(argv[2], atoi(argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: netprobe serve-udp PORT | ask IP PORT MSG | sink PORT | send IP PORT MIB\n");
	return 2;
}
