@intake
Feature: Workflows the clock starts run once for each tick
  A workflow can be started by the clock as well as by webhooks: a report
  every quarter of an hour, a reminder every morning. Each tick of its
  schedule starts one run, with the tick as its input, however many engines
  are watching the schedule at that moment, and that run is a run like any
  other: it goes to its end and replays exactly from its log.

  Background:
    Given the project "acme" with the workflow "stock-report", started every 15 minutes:
      | step  | type      | does                                | then |
      | count | transform | {for: scheduledAt, report: 'stock'} | done |
      | done  | terminate | succeeded                           |      |

  Scenario: A report scheduled every 15 minutes runs once for each quarter of an hour that passes
    When the clock moves forward 1 hour
    Then "stock-report" ran once for each of the 4 ticks that passed
    And the run replays exactly from its log

  Scenario: Two engines watching the same schedule still start each tick once
    Given a second engine ticks the same schedules
    When the clock moves forward 1 hour
    Then "stock-report" ran once for each of the 4 ticks that passed
