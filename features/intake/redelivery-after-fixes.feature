@intake @bad-input
Feature: A webhook sent again after an operator's fix belongs to the run it started
  A sender that got no answer sends the same delivery again, sometimes long
  after an operator has acted on its run. The delivery is still the run it
  started: an operator's correction of the input does not make the original
  order a stranger, a canceled run is not started a second time, and a
  different order under that delivery id is still refused without a trace.

  Background:
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  Scenario: The original order sent again after an operator corrected the run's input belongs to that run
    Given a run of "order-follow-up" that is waiting in "wait"
    And "lee@acme.example" patches the run's input because "the customer agreed a discount", with:
      """json
      { "order": { "sum": 38.25 } }
      """
    When the same delivery arrives again
    Then both deliveries belong to one run
    And the run is waiting in "wait"

  Scenario: A delivery sent again after its run was canceled starts nothing, even once the hour has passed
    Given a run of "order-follow-up" that is waiting in "wait"
    And "dana@acme.example" cancels the run because "the customer called to cancel"
    When the same delivery arrives again
    And the clock moves forward 2 hours
    Then both deliveries belong to one run
    And the run is canceled
    And the order service was never called

  Scenario: A different order under the delivery id of a run held for review is refused, and the run stays held
    Given a run of "order-follow-up" that is paused in "wait"
    When a different order arrives with the same delivery id
    Then it is refused with 409 "delivery_id_reused"
    And nothing was recorded
    And the run is paused
