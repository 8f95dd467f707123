//! Medium / device type byte (EN 13757-3 table; the same codes serve as the wireless device type).

/// The medium byte of a variable-data header (or the wireless device type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    Other,
    Oil,
    Electricity,
    Gas,
    HeatOutlet,
    Steam,
    WarmWater,
    Water,
    HeatCostAllocator,
    CompressedAir,
    CoolingOutlet,
    CoolingInlet,
    HeatInlet,
    HeatCooling,
    BusSystem,
    Unknown,
    IrrigationWater,
    WaterLogger,
    GasLogger,
    GasConverter,
    CalorificValue,
    HotWater,
    ColdWater,
    DualWater,
    Pressure,
    AdConverter,
    SmokeDetector,
    RoomSensor,
    GasDetector,
    Breaker,
    Valve,
    CustomerUnit,
    WasteWater,
    Garbage,
    ServiceUnit,
    CommunicationController,
    UnidirectionalRepeater,
    BidirectionalRepeater,
    RadioConverterSystem,
    RadioConverterMeter,
    WiredAdapter,
    /// A code the standard reserves or a manufacturer uses privately (Techem, for one).
    Reserved(u8),
}

impl Medium {
    pub fn from_code(code: u8) -> Medium {
        use Medium::*;
        match code {
            0x00 => Other,
            0x01 => Oil,
            0x02 => Electricity,
            0x03 => Gas,
            0x04 => HeatOutlet,
            0x05 => Steam,
            0x06 => WarmWater,
            0x07 => Water,
            0x08 => HeatCostAllocator,
            0x09 => CompressedAir,
            0x0A => CoolingOutlet,
            0x0B => CoolingInlet,
            0x0C => HeatInlet,
            0x0D => HeatCooling,
            0x0E => BusSystem,
            0x0F => Unknown,
            0x10 => IrrigationWater,
            0x11 => WaterLogger,
            0x12 => GasLogger,
            0x13 => GasConverter,
            0x14 => CalorificValue,
            0x15 => HotWater,
            0x16 => ColdWater,
            0x17 => DualWater,
            0x18 => Pressure,
            0x19 => AdConverter,
            0x1A => SmokeDetector,
            0x1B => RoomSensor,
            0x1C => GasDetector,
            0x20 => Breaker,
            0x21 => Valve,
            0x25 => CustomerUnit,
            0x28 => WasteWater,
            0x29 => Garbage,
            0x30 => ServiceUnit,
            0x31 => CommunicationController,
            0x32 => UnidirectionalRepeater,
            0x33 => BidirectionalRepeater,
            0x36 => RadioConverterSystem,
            0x37 => RadioConverterMeter,
            0x38 => WiredAdapter,
            other => Reserved(other),
        }
    }

    pub fn code(self) -> u8 {
        use Medium::*;
        match self {
            Other => 0x00,
            Oil => 0x01,
            Electricity => 0x02,
            Gas => 0x03,
            HeatOutlet => 0x04,
            Steam => 0x05,
            WarmWater => 0x06,
            Water => 0x07,
            HeatCostAllocator => 0x08,
            CompressedAir => 0x09,
            CoolingOutlet => 0x0A,
            CoolingInlet => 0x0B,
            HeatInlet => 0x0C,
            HeatCooling => 0x0D,
            BusSystem => 0x0E,
            Unknown => 0x0F,
            IrrigationWater => 0x10,
            WaterLogger => 0x11,
            GasLogger => 0x12,
            GasConverter => 0x13,
            CalorificValue => 0x14,
            HotWater => 0x15,
            ColdWater => 0x16,
            DualWater => 0x17,
            Pressure => 0x18,
            AdConverter => 0x19,
            SmokeDetector => 0x1A,
            RoomSensor => 0x1B,
            GasDetector => 0x1C,
            Breaker => 0x20,
            Valve => 0x21,
            CustomerUnit => 0x25,
            WasteWater => 0x28,
            Garbage => 0x29,
            ServiceUnit => 0x30,
            CommunicationController => 0x31,
            UnidirectionalRepeater => 0x32,
            BidirectionalRepeater => 0x33,
            RadioConverterSystem => 0x36,
            RadioConverterMeter => 0x37,
            WiredAdapter => 0x38,
            Reserved(c) => c,
        }
    }

    /// Stable machine name used in our JSON (snake_case).
    pub fn name(self) -> &'static str {
        use Medium::*;
        match self {
            Other => "other",
            Oil => "oil",
            Electricity => "electricity",
            Gas => "gas",
            HeatOutlet => "heat",
            Steam => "steam",
            WarmWater => "warm_water",
            Water => "water",
            HeatCostAllocator => "heat_cost_allocator",
            CompressedAir => "compressed_air",
            CoolingOutlet => "cooling",
            CoolingInlet => "cooling_inlet",
            HeatInlet => "heat_inlet",
            HeatCooling => "heat_cooling",
            BusSystem => "bus_system",
            Unknown => "unknown",
            IrrigationWater => "irrigation_water",
            WaterLogger => "water_logger",
            GasLogger => "gas_logger",
            GasConverter => "gas_converter",
            CalorificValue => "calorific_value",
            HotWater => "hot_water",
            ColdWater => "cold_water",
            DualWater => "dual_water",
            Pressure => "pressure",
            AdConverter => "ad_converter",
            SmokeDetector => "smoke_detector",
            RoomSensor => "room_sensor",
            GasDetector => "gas_detector",
            Breaker => "breaker",
            Valve => "valve",
            CustomerUnit => "customer_unit",
            WasteWater => "waste_water",
            Garbage => "garbage",
            ServiceUnit => "service_unit",
            CommunicationController => "communication_controller",
            UnidirectionalRepeater => "unidirectional_repeater",
            BidirectionalRepeater => "bidirectional_repeater",
            RadioConverterSystem => "radio_converter_system",
            RadioConverterMeter => "radio_converter_meter",
            WiredAdapter => "wired_adapter",
            Reserved(_) => "reserved",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(Medium::from_code(code).code(), code);
        }
        assert_eq!(Medium::from_code(0x07), Medium::Water);
        assert_eq!(Medium::from_code(0x62), Medium::Reserved(0x62));
    }
}
