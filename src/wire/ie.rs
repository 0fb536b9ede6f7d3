//! wire: the information element numbers exflow reads (IANA IPFIX registry; NetFlow v9 uses
//! the same numbers below 128, RFC 3954 section 8). Everything else is skipped by length.

pub const OCTET_DELTA_COUNT: u16 = 1;
pub const PACKET_DELTA_COUNT: u16 = 2;
pub const PROTOCOL_IDENTIFIER: u16 = 4;
pub const IP_CLASS_OF_SERVICE: u16 = 5;
pub const TCP_CONTROL_BITS: u16 = 6;
pub const SOURCE_TRANSPORT_PORT: u16 = 7;
pub const SOURCE_IPV4_ADDRESS: u16 = 8;
pub const INGRESS_INTERFACE: u16 = 10;
pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
pub const EGRESS_INTERFACE: u16 = 14;
pub const IP_NEXT_HOP_IPV4_ADDRESS: u16 = 15;
pub const BGP_SOURCE_AS_NUMBER: u16 = 16;
pub const BGP_DESTINATION_AS_NUMBER: u16 = 17;
pub const FLOW_END_SYS_UP_TIME: u16 = 21;
pub const FLOW_START_SYS_UP_TIME: u16 = 22;
pub const SOURCE_IPV6_ADDRESS: u16 = 27;
pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
/// NetFlow v9 SAMPLING_INTERVAL; IPFIX samplingInterval (deprecated, still sent by Cisco).
pub const SAMPLING_INTERVAL: u16 = 34;
/// NetFlow v9 FLOW_SAMPLER_ID; IPFIX samplerId.
pub const SAMPLER_ID: u16 = 48;
/// NetFlow v9 FLOW_SAMPLER_RANDOM_INTERVAL; IPFIX samplerRandomInterval.
pub const SAMPLER_RANDOM_INTERVAL: u16 = 50;
pub const IP_VERSION: u16 = 60;
pub const IP_NEXT_HOP_IPV6_ADDRESS: u16 = 62;
/// interfaceName / interfaceDescription (options data: per ifIndex names).
pub const INTERFACE_NAME: u16 = 82;
pub const INTERFACE_DESCRIPTION: u16 = 83;
pub const OCTET_TOTAL_COUNT: u16 = 85;
pub const PACKET_TOTAL_COUNT: u16 = 86;
pub const EXPORTER_IPV4_ADDRESS: u16 = 130;
pub const EXPORTER_IPV6_ADDRESS: u16 = 131;
/// Why the flow ended (RFC 5102): 1 idle timeout, 2 active timeout, 3 end of flow detected
/// (TCP FIN/RST), 4 forced end, 5 lack of resources.
pub const FLOW_END_REASON: u16 = 136;
/// flowId: an identifier of the flow unique within the observation domain; Cisco NSEL's
/// NF_F_CONN_ID (the firewall's connection id) and Palo Alto's session id use it.
pub const FLOW_ID: u16 = 148;
/// postNATSourceIPv4Address, postNATDestinationIPv4Address, postNAPTSourceTransportPort,
/// postNAPTDestinationTransportPort (NSEL's NF_F_XLATE_*): the addresses after translation.
pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
pub const POST_NAT_DESTINATION_IPV4_ADDRESS: u16 = 226;
pub const POST_NAPT_SOURCE_TRANSPORT_PORT: u16 = 227;
pub const POST_NAPT_DESTINATION_TRANSPORT_PORT: u16 = 228;
/// firewallEvent (NSEL NF_F_FW_EVENT): 1 created, 2 deleted, 3 denied, 4 alert, 5 update.
pub const FIREWALL_EVENT: u16 = 233;
/// The NAT fields and event code in NetFlow v9 as older ASAs number them
/// (NF_F_XLATE_SRC_ADDR_IPV4 40001 ... NF_F_XLATE_DST_PORT 40004, NF_F_FW_EVENT 40005).
pub const NSEL_V9_XLATE_SRC_ADDR_IPV4: u16 = 40001;
pub const NSEL_V9_XLATE_DST_ADDR_IPV4: u16 = 40002;
pub const NSEL_V9_XLATE_SRC_PORT: u16 = 40003;
pub const NSEL_V9_XLATE_DST_PORT: u16 = 40004;
pub const NSEL_V9_FW_EVENT: u16 = 40005;
pub const POST_NAT_SOURCE_IPV6_ADDRESS: u16 = 281;
pub const POST_NAT_DESTINATION_IPV6_ADDRESS: u16 = 282;
/// ipHeaderPacketSection / dataLinkFrameSection: a sampled packet's leading bytes (Cisco and
/// Juniper inline sampling), parsed for the 5-tuple when the record has no address fields.
pub const IP_HEADER_PACKET_SECTION: u16 = 313;
pub const DATA_LINK_FRAME_SECTION: u16 = 315;
/// Cisco NSEL: initiator-to-responder and responder-to-initiator octets and packets of a
/// firewall connection (NetFlow v9 fwd/rev flow delta bytes).
pub const INITIATOR_OCTETS: u16 = 231;
pub const RESPONDER_OCTETS: u16 = 232;
pub const INITIATOR_PACKETS: u16 = 298;
pub const RESPONDER_PACKETS: u16 = 299;
/// When the observation (a firewall event) happened, ms since the epoch (NSEL event time).
pub const OBSERVATION_TIME_MILLISECONDS: u16 = 323;
pub const FLOW_START_SECONDS: u16 = 150;
pub const FLOW_END_SECONDS: u16 = 151;
pub const FLOW_START_MILLISECONDS: u16 = 152;
pub const FLOW_END_MILLISECONDS: u16 = 153;
pub const FLOW_START_MICROSECONDS: u16 = 154;
pub const FLOW_END_MICROSECONDS: u16 = 155;
pub const FLOW_START_NANOSECONDS: u16 = 156;
pub const FLOW_END_NANOSECONDS: u16 = 157;
pub const FLOW_START_DELTA_MICROSECONDS: u16 = 158;
pub const FLOW_END_DELTA_MICROSECONDS: u16 = 159;
pub const SYSTEM_INIT_TIME_MILLISECONDS: u16 = 160;
pub const FLOW_DURATION_MILLISECONDS: u16 = 161;
pub const FLOW_DURATION_MICROSECONDS: u16 = 162;
pub const SELECTOR_ID: u16 = 302;
pub const SAMPLING_PACKET_INTERVAL: u16 = 305;
pub const SAMPLING_PACKET_SPACE: u16 = 306;
pub const SAMPLING_SIZE: u16 = 309;
pub const SAMPLING_POPULATION: u16 = 310;

/// RFC 5103 reverse information elements: the forward element's number under this
/// private enterprise number.
pub const REVERSE_PEN: u32 = 29305;
