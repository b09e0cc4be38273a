/* SPDX-License-Identifier: (MIT OR Apache-2.0) */
/*
 * Limits shared by the XDP program and the Rust director: the one place they are defined.
 * crates/dataplane/build.rs reads the XDPVS_* lines below into Rust constants
 * (xdpvs_dataplane::limits), so both sides always agree.
 */
#ifndef XDPVS_LIMITS_H
#define XDPVS_LIMITS_H

/* RX queues (one AF_XDP socket and one worker each). */
#define XDPVS_MAX_QUEUES 256
/* Virtual services (protocol, VIP, port). */
#define XDPVS_MAX_SERVICES 1024
/* Distinct VIPs: at most one per service. */
#define XDPVS_MAX_VIPS 1024
/* Real-server entries, summed over services. */
#define XDPVS_MAX_DESTS 8192

#endif
