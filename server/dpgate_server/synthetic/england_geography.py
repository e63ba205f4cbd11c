"""England's NHS geography in the data window: 7 regions > 42 ICBs > 106 sub-ICB locations.

Read from NHS England's "Appointments in General Practice" coverage file for July 2025
(open practices and registered patients per sub-ICB location, with the ICB and region ONS
codes). These are public facts; the synthetic population places its practices inside them so
that every sub-ICB, ICB and region holds as many practices as it really did.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SubIcbLocation:
    """One sub-ICB location and its place in the hierarchy, as published for July 2025."""

    region_code: str
    icb_code: str
    sub_icb_code: str
    open_practices: int
    registered_patients: int


SUB_ICB_LOCATIONS: tuple[SubIcbLocation, ...] = (
    SubIcbLocation("E40000003", "E54000027", "W2U3Z", 341, 2919117),
    SubIcbLocation("E40000003", "E54000028", "93C", 180, 1836325),
    SubIcbLocation("E40000003", "E54000029", "A3A8R", 264, 2482743),
    SubIcbLocation("E40000003", "E54000030", "72Q", 197, 2123976),
    SubIcbLocation("E40000003", "E54000031", "36L", 172, 1776992),
    SubIcbLocation("E40000005", "E54000032", "91Q", 176, 2040519),
    SubIcbLocation("E40000005", "E54000034", "D4U1Y", 67, 853702),
    SubIcbLocation("E40000005", "E54000042", "10R", 11, 235339),
    SubIcbLocation("E40000005", "E54000042", "D9Y0V", 120, 1735102),
    SubIcbLocation("E40000005", "E54000044", "10Q", 64, 828315),
    SubIcbLocation("E40000005", "E54000044", "14Y", 46, 597602),
    SubIcbLocation("E40000005", "E54000044", "15A", 43, 589957),
    SubIcbLocation("E40000005", "E54000052", "92A", 98, 1149435),
    SubIcbLocation("E40000005", "E54000053", "09D", 31, 332127),
    SubIcbLocation("E40000005", "E54000053", "70F", 75, 950361),
    SubIcbLocation("E40000005", "E54000053", "97R", 50, 577295),
    SubIcbLocation("E40000006", "E54000036", "11N", 55, 605597),
    SubIcbLocation("E40000006", "E54000037", "15N", 117, 1296237),
    SubIcbLocation("E40000006", "E54000038", "11X", 62, 608283),
    SubIcbLocation("E40000006", "E54000039", "15C", 73, 1096485),
    SubIcbLocation("E40000006", "E54000040", "92G", 84, 1012607),
    SubIcbLocation("E40000006", "E54000041", "11J", 68, 831517),
    SubIcbLocation("E40000006", "E54000043", "11M", 65, 697383),
    SubIcbLocation("E40000007", "E54000022", "26A", 104, 1100584),
    SubIcbLocation("E40000007", "E54000023", "06L", 35, 419965),
    SubIcbLocation("E40000007", "E54000023", "06T", 33, 380422),
    SubIcbLocation("E40000007", "E54000023", "07K", 24, 280626),
    SubIcbLocation("E40000007", "E54000024", "M1J4Y", 86, 1148540),
    SubIcbLocation("E40000007", "E54000025", "06K", 49, 636814),
    SubIcbLocation("E40000007", "E54000025", "06N", 48, 693790),
    SubIcbLocation("E40000007", "E54000025", "07H", 29, 337304),
    SubIcbLocation("E40000007", "E54000026", "06Q", 38, 424566),
    SubIcbLocation("E40000007", "E54000026", "07G", 26, 190802),
    SubIcbLocation("E40000007", "E54000026", "99E", 34, 296262),
    SubIcbLocation("E40000007", "E54000026", "99F", 23, 188612),
    SubIcbLocation("E40000007", "E54000026", "99G", 24, 196599),
    SubIcbLocation("E40000007", "E54000056", "06H", 86, 1058084),
    SubIcbLocation("E40000010", "E54000008", "01F", 14, 136436),
    SubIcbLocation("E40000010", "E54000008", "01J", 23, 174088),
    SubIcbLocation("E40000010", "E54000008", "01T", 28, 161549),
    SubIcbLocation("E40000010", "E54000008", "01V", 14, 128831),
    SubIcbLocation("E40000010", "E54000008", "01X", 28, 204119),
    SubIcbLocation("E40000010", "E54000008", "02E", 26, 230797),
    SubIcbLocation("E40000010", "E54000008", "12F", 43, 346523),
    SubIcbLocation("E40000010", "E54000008", "27D", 79, 823483),
    SubIcbLocation("E40000010", "E54000008", "99A", 83, 597875),
    SubIcbLocation("E40000010", "E54000048", "00Q", 22, 188119),
    SubIcbLocation("E40000010", "E54000048", "00R", 17, 178803),
    SubIcbLocation("E40000010", "E54000048", "00X", 25, 194504),
    SubIcbLocation("E40000010", "E54000048", "01A", 47, 411461),
    SubIcbLocation("E40000010", "E54000048", "01E", 22, 235984),
    SubIcbLocation("E40000010", "E54000048", "01K", 31, 355825),
    SubIcbLocation("E40000010", "E54000048", "02G", 15, 118384),
    SubIcbLocation("E40000010", "E54000048", "02M", 18, 187705),
    SubIcbLocation("E40000010", "E54000057", "00T", 49, 334488),
    SubIcbLocation("E40000010", "E54000057", "00V", 25, 212774),
    SubIcbLocation("E40000010", "E54000057", "00Y", 33, 269221),
    SubIcbLocation("E40000010", "E54000057", "01D", 37, 253188),
    SubIcbLocation("E40000010", "E54000057", "01G", 37, 323530),
    SubIcbLocation("E40000010", "E54000057", "01W", 32, 330064),
    SubIcbLocation("E40000010", "E54000057", "01Y", 31, 229045),
    SubIcbLocation("E40000010", "E54000057", "02A", 26, 249371),
    SubIcbLocation("E40000010", "E54000057", "02H", 57, 352667),
    SubIcbLocation("E40000010", "E54000057", "14L", 82, 750204),
    SubIcbLocation("E40000011", "E54000010", "04Y", 23, 140737),
    SubIcbLocation("E40000011", "E54000010", "05D", 18, 155250),
    SubIcbLocation("E40000011", "E54000010", "05G", 30, 230923),
    SubIcbLocation("E40000011", "E54000010", "05Q", 21, 223688),
    SubIcbLocation("E40000011", "E54000010", "05V", 14, 156949),
    SubIcbLocation("E40000011", "E54000010", "05W", 36, 300860),
    SubIcbLocation("E40000011", "E54000011", "M2L0M", 51, 537509),
    SubIcbLocation("E40000011", "E54000013", "71E", 81, 826135),
    SubIcbLocation("E40000011", "E54000015", "03W", 31, 361202),
    SubIcbLocation("E40000011", "E54000015", "04C", 51, 449203),
    SubIcbLocation("E40000011", "E54000015", "04V", 46, 423896),
    SubIcbLocation("E40000011", "E54000018", "B2M3M", 119, 1117369),
    SubIcbLocation("E40000011", "E54000019", "18C", 78, 834144),
    SubIcbLocation("E40000011", "E54000055", "15E", 177, 1647836),
    SubIcbLocation("E40000011", "E54000058", "15M", 111, 1143877),
    SubIcbLocation("E40000011", "E54000059", "78H", 67, 851257),
    SubIcbLocation("E40000011", "E54000060", "02Q", 10, 128553),
    SubIcbLocation("E40000011", "E54000060", "52R", 119, 1153548),
    SubIcbLocation("E40000011", "E54000062", "D2P2L", 170, 1343718),
    SubIcbLocation("E40000012", "E54000050", "00L", 36, 342710),
    SubIcbLocation("E40000012", "E54000050", "00N", 20, 159678),
    SubIcbLocation("E40000012", "E54000050", "00P", 39, 295347),
    SubIcbLocation("E40000012", "E54000050", "01H", 33, 337249),
    SubIcbLocation("E40000012", "E54000050", "13T", 52, 560117),
    SubIcbLocation("E40000012", "E54000050", "16C", 77, 739904),
    SubIcbLocation("E40000012", "E54000050", "84H", 61, 569311),
    SubIcbLocation("E40000012", "E54000050", "99C", 20, 228981),
    SubIcbLocation("E40000012", "E54000051", "02Y", 24, 318877),
    SubIcbLocation("E40000012", "E54000051", "03F", 26, 314514),
    SubIcbLocation("E40000012", "E54000051", "03H", 19, 174656),
    SubIcbLocation("E40000012", "E54000051", "03K", 18, 185733),
    SubIcbLocation("E40000012", "E54000051", "03Q", 13, 250095),
    SubIcbLocation("E40000012", "E54000051", "42D", 63, 569793),
    SubIcbLocation("E40000012", "E54000054", "02T", 20, 225815),
    SubIcbLocation("E40000012", "E54000054", "03R", 34, 400167),
    SubIcbLocation("E40000012", "E54000054", "15F", 86, 941143),
    SubIcbLocation("E40000012", "E54000054", "36J", 58, 669814),
    SubIcbLocation("E40000012", "E54000054", "X2C4Y", 65, 462535),
    SubIcbLocation("E40000012", "E54000061", "02P", 31, 270781),
    SubIcbLocation("E40000012", "E54000061", "02X", 36, 340749),
    SubIcbLocation("E40000012", "E54000061", "03L", 29, 276437),
    SubIcbLocation("E40000012", "E54000061", "03N", 74, 636434),
)
"""All 106 sub-ICB locations, ordered by region, ICB and sub-ICB code."""
