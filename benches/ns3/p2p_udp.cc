// The ns-3 peer of `cargo bench --bench sim`'s two-node cases: two nodes joined by a 100 Gbps
// point-to-point link with 5 us of delay, FLOWS constant-rate UDP flows (OnOff, always on) of
// FRAME-byte frames (the UDP payload is FRAME - 42, as in an Ethernet/IPv4/UDP frame) adding up
// to GBPS, into a PacketSink, for SECONDS of simulated time. Prints one line:
//   frames=<received> wall_s=<wall time of Simulator::Run> sim_s=<simulated seconds>
//
//   p2p_udp FRAME GBPS FLOWS SECONDS
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ns3/applications-module.h"
#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"

using namespace ns3;

int main(int argc, char **argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s FRAME GBPS FLOWS SECONDS\n", argv[0]);
    return 2;
  }
  const int frame = std::atoi(argv[1]);
  const double gbps = std::atof(argv[2]);
  const int flows = std::atoi(argv[3]);
  const double seconds = std::atof(argv[4]);
  if (frame < 60 || gbps <= 0 || flows < 1 || seconds <= 0) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  NodeContainer nodes;
  nodes.Create(2);
  PointToPointHelper link;
  link.SetDeviceAttribute("DataRate", StringValue("100Gbps"));
  link.SetDeviceAttribute("Mtu", UintegerValue(9100));
  link.SetChannelAttribute("Delay", StringValue("5us"));
  NetDeviceContainer devices = link.Install(nodes);
  InternetStackHelper stack;
  stack.Install(nodes);
  Ipv4AddressHelper address;
  address.SetBase("10.0.0.0", "255.255.255.0");
  Ipv4InterfaceContainer interfaces = address.Assign(devices);

  const uint16_t port = 9000;
  PacketSinkHelper sink("ns3::UdpSocketFactory", InetSocketAddress(Ipv4Address::GetAny(), port));
  ApplicationContainer sinks = sink.Install(nodes.Get(1));
  sinks.Start(Seconds(0.0));
  const double per_flow_bps = gbps * 1e9 / flows;
  for (int i = 0; i < flows; ++i) {
    OnOffHelper onoff("ns3::UdpSocketFactory", InetSocketAddress(interfaces.GetAddress(1), port));
    onoff.SetAttribute("OnTime", StringValue("ns3::ConstantRandomVariable[Constant=1]"));
    onoff.SetAttribute("OffTime", StringValue("ns3::ConstantRandomVariable[Constant=0]"));
    // OnOff's rate counts payload bytes: scale it so frames (payload + 42) add up to GBPS.
    const double payload = frame - 42;
    onoff.SetAttribute("DataRate", DataRateValue(DataRate(uint64_t(per_flow_bps * payload / frame))));
    onoff.SetAttribute("PacketSize", UintegerValue(uint32_t(payload)));
    ApplicationContainer app = onoff.Install(nodes.Get(0));
    app.Start(Seconds(0.0));
    app.Stop(Seconds(seconds));
  }
  Simulator::Stop(Seconds(seconds + 0.001));
  const auto start = std::chrono::steady_clock::now();
  Simulator::Run();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const uint64_t bytes = DynamicCast<PacketSink>(sinks.Get(0))->GetTotalRx();
  Simulator::Destroy();
  std::printf("frames=%llu wall_s=%.6f sim_s=%.6f\n",
              (unsigned long long)(bytes / uint64_t(frame - 42)), wall, seconds + 0.001);
  return 0;
}
